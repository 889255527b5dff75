"""What an inference node measured: episodes, timings, and the controller's holds while it drove."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dp.stats import timing_summary

HOLD_REASONS = ("command_expired", "heartbeat_timeout")  # the controller's watchdog faults, counted by the report


@dataclass
class NodeReport:
    episodes: list[dict] = field(default_factory=list)  # per episode: seed, success, steps
    cycle_ms: list[float] = field(default_factory=list)  # State received -> command sent (node clock)
    policy_ms: list[float] = field(default_factory=list)  # inside the policy
    prime_ms: list[float] = field(default_factory=list)  # each episode's first chunk, sampled while the robot holds
    period_ms: list[float] = field(default_factory=list)  # between consecutive cycles of an episode
    obs_to_command_ms: list[float] = field(default_factory=list)  # measured by the controller (State.cmd_latency)
    rejected: int = 0  # bad States dropped
    send_failures: int = 0
    policy_errors: int = 0
    resyncs: int = 0
    period_target_ms: float | None = None  # the control period the node should cycle at
    holds: Counter = field(default_factory=Counter)  # the controller's watchdog holds during episodes, by reason
    held_ticks: int = 0  # ticks of an episode, after its first command, on which the robot held
    late_plans: int = 0  # plan-ahead plans not ready when due (the node waited for them)
    plan_ahead: list[int] = field(default_factory=list)  # the plan-ahead lead (control steps) of each episode
    replan_every: list[int] = field(default_factory=list)  # the re-planning interval of each episode (with plan-ahead)

    def summary(self) -> dict[str, Any]:
        n = len(self.episodes)
        wins = sum(e["success"] for e in self.episodes)
        return {
            "episodes": n, "successes": wins, "success_rate": wins / n if n else None,
            "mean_episode_length": float(np.mean([e["steps"] for e in self.episodes])) if n else None,
            **({"mean_score": float(np.mean([e["score"] for e in self.episodes]))} if n and all("score" in e for e in self.episodes) else {}),
            "obs_to_command_ms": timing_summary(self.obs_to_command_ms), "cycle_ms": timing_summary(self.cycle_ms),
            "policy_ms": timing_summary(self.policy_ms), "prime_ms": timing_summary(self.prime_ms), "period_ms": timing_summary(self.period_ms, self.period_target_ms),
            "rejected_states": self.rejected, "send_failures": self.send_failures,
            "policy_errors": self.policy_errors, "resyncs": self.resyncs, "holds": dict(self.holds),
            "held_ticks": self.held_ticks, "late_plans": self.late_plans,
            "plan_ahead": {"min": min(self.plan_ahead), "max": max(self.plan_ahead)} if self.plan_ahead else None,
            "replan_every": {"min": min(self.replan_every), "max": max(self.replan_every)} if self.replan_every else None,
            "per_episode": self.episodes,
        }
