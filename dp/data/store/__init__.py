"""The episode store: episodes of time-first arrays in a Zarr group, safe against crashes.

Layout (compatible with Diffusion Policy's replay buffer, see FORMATS.md §1)::

    store.zarr/
      data/<key>          (T_total, ...) all episodes concatenated
      meta/episode_ends   int64 cumulative exclusive ends; written LAST, it is the commit
      meta/<name>         one entry per episode: task, instruction, success, seed, ...
      zarr.json           root attrs: schema version, control frequency, robot, key roles

Crash safety rests on two facts: zarr's LocalStore writes every file atomically (temp file +
rename), and an episode becomes visible only when ``meta/episode_ends`` grows, after its data and
metadata are written. A writer killed mid-append leaves data (and metadata entries) past the last
end; on the next open for writing that torn tail is dropped, with a warning.
"""

from dp.data.store.layout import StoreWriteError
from dp.data.store.writing import EpisodeStore

__all__ = ["EpisodeStore", "StoreWriteError"]
