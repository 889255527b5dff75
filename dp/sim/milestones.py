"""Milestones of the robosuite tasks: the steps on the way to success (grasped, lifted, on the peg,
...), checked in the simulator's state after every step of an evaluation. An episode's milestones
are those reached at any step, so a failure says where it stopped: never grasped, dropped on the way,
placed but not released. robosuite's staged rewards mix these into one number; here each is a yes/no
read from the same physics (robosuite's own grasp, bin and peg checks where it has them).

Each function takes the raw robosuite environment and returns ``{milestone: reached now}`` in the
task's order; success itself is counted by the evaluation, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

LIFT_MARGIN = 0.04  # metres above the resting height that count as lifted (robosuite's Stack uses 0.04)
BIN_CLEARANCE = 0.1  # metres above the can's bin base that count as lifted out of it
DOOR_UNLATCHED = 1.2  # lever angle (rad) from which the latch clears the frame (the door expert turns to 1.35)


def _grasped(env: Any, geoms: Any) -> bool:
    return bool(env._check_grasp(gripper=env.robots[0].gripper, object_geoms=geoms))


def _grasped_and_lifted(env: Any, geoms: Any, z: float, floor: float) -> dict[str, bool]:
    """Grasped (robosuite's grasp check on ``geoms``), and lifted: grasped with the object above ``floor``."""
    grasped = _grasped(env, geoms)
    return {"grasped": grasped, "lifted": grasped and bool(z > floor)}


def _z(env: Any, body_id: int) -> float:
    return float(env.sim.data.body_xpos[body_id][2])


def lift(env: Any) -> dict[str, bool]:
    return {"grasped": _grasped(env, env.cube)}  # lifted is lift's success


def stack(env: Any) -> dict[str, bool]:
    return _grasped_and_lifted(env, env.cubeA, _z(env, env.cubeA_body_id), env.table_offset[2] + LIFT_MARGIN)


def can(env: Any) -> dict[str, bool]:
    obj = env.objects[env.object_id]
    pos = env.sim.data.body_xpos[env.obj_body_id[obj.name]]
    # robosuite counts the can as placed only once the hand is also more than ~4 cm from it: "in its bin"
    # without "let go in its bin" means the hand never opened; let go without success, that it never left
    reached = _grasped_and_lifted(env, obj.contact_geoms, float(pos[2]), env.bin1_pos[2] + BIN_CLEARANCE)
    in_bin = not env.not_in_bin(pos, env.object_id)
    return {**reached, "in its bin": in_bin, "let go in its bin": in_bin and not reached["grasped"]}


def square(env: Any) -> dict[str, bool]:
    nut = env.nuts[0]
    pos = np.array(env.sim.data.body_xpos[env.obj_body_id[nut.name]])
    return {**_grasped_and_lifted(env, nut.contact_geoms, float(pos[2]), env.table_offset[2] + LIFT_MARGIN),
            "on the peg": bool(env.on_peg(pos, 0))}  # success also needs the hand away from the nut


def door(env: Any) -> dict[str, bool]:
    return {"lever turned": float(env.sim.data.qpos[env.handle_qpos_addr]) > DOOR_UNLATCHED}


MILESTONES: dict[str, Callable[[Any], dict[str, bool]]] = {
    "lift": lift, "stack": stack, "can": can, "square": square, "door": door,
}
