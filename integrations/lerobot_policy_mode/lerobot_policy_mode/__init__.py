"""dp's MoDE policy as a LeRobot policy plugin (policy type ``mode``).

LeRobot imports this package when it is installed (``register_third_party_plugins``): importing it
registers :class:`ModeConfig` as ``--policy.type=mode``. See docs/lerobot.md in the dp repository.
"""

from lerobot_policy_mode.configuration_mode import ModeConfig
from lerobot_policy_mode.modeling_mode import ModePolicy
from lerobot_policy_mode.processor_mode import make_mode_pre_post_processors

__all__ = ["ModeConfig", "ModePolicy", "make_mode_pre_post_processors"]
