"""Per-sender sequence numbers: out-of-order and replayed messages are refused."""

from __future__ import annotations

import math
from collections import OrderedDict

from dp.link.protocol.schema import ProtocolError

MAX_FORCED = 1024  # senders admitted past a full table (Stops, Releases), tracked for the keep window


class SeqGuard:
    """Rejects out-of-order or repeated sequence numbers, per sender, in a table of at most
    ``max_senders`` entries. A sender heard within the last ``keep`` seconds is never evicted: when
    the table is full of such senders a new sender is refused instead, so a flood of new sender ids
    cannot flush a live sender's state and re-admit a replay of its messages. (A receiver must also
    refuse anything computed more than ``keep`` seconds ago, as the controller does by each message's
    stamp: that is what makes forgetting a quiet sender safe.) ``keep=None``: the least recently
    heard sender makes room (for clients, whose only sender is the controller run).

    ``check(..., force=True)`` admits a new sender even when the table is full (a Stop, and the
    operator's Release, must always get through): it goes to a second table of at most ``MAX_FORCED`` senders, forgotten after
    ``keep`` seconds, where its sequence numbers are checked the same way."""

    def __init__(self, max_senders: int = 64, keep: float | None = None):
        self._last: OrderedDict[int, tuple[int, float]] = OrderedDict()  # sender -> (seq, last heard), oldest first
        self._forced: OrderedDict[int, tuple[int, float]] = OrderedDict()  # admitted past a full table
        self._max = max_senders
        self._keep = keep

    def check(self, sender: int, seq: int, field: str = "seq", now: float = 0.0, force: bool = False) -> None:
        table = self._forced if sender in self._forced else self._last
        entry = table.get(sender)
        if entry is not None and seq <= entry[0]:
            raise ProtocolError(field, f"out of order: {seq} after {entry[0]} from sender {sender:x}")
        if entry is None and len(self._last) >= self._max:
            oldest, (_, heard) = next(iter(self._last.items()))
            if self._keep is not None and now - heard <= self._keep:
                if not force:
                    raise ProtocolError(field.split(".")[0] + ".sender",
                                        f"new sender {sender:x} refused: {self._max} senders were heard within {self._keep:g} s")
                table = self._admit_forced(now)
            else:
                del self._last[oldest]
        table[sender] = (seq, now)
        table.move_to_end(sender)

    def _admit_forced(self, now: float) -> OrderedDict[int, tuple[int, float]]:
        """The forced table with room for one more: senders older than ``keep`` (then the oldest) dropped."""
        while self._forced and (now - next(iter(self._forced.values()))[1] > self._keep or len(self._forced) >= MAX_FORCED):
            self._forced.popitem(last=False)
        return self._forced

    def last_heard(self, sender: int) -> float:
        """When ``sender`` last passed :meth:`check` (-inf if unknown)."""
        entry = self._last.get(sender) or self._forced.get(sender)
        return -math.inf if entry is None else entry[1]
