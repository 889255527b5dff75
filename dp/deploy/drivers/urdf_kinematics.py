"""Forward kinematics from a URDF: the pose of one frame (link) in the URDF's root frame as a
function of the joint positions along the chain to it.

Hand-written with numpy and ``xml.etree`` rather than a URDF library: a serial chain is a product
of a few homogeneous transforms (each joint's fixed origin, then its motion about or along its
axis), libraries such as yourdfpy or ikpy would be a new dependency for that, and MuJoCo (already
one) merges fixed frames such as a gripper's tool frame and needs the mesh files. The tests check
this against MuJoCo's own URDF parser.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from dp.errors import DpError

MOVING = ("revolute", "continuous", "prismatic")


@dataclass
class ChainJoint:
    """One joint of the chain: its fixed transform from the parent link, and how it moves."""

    name: str
    type: str  # revolute | continuous | prismatic | fixed (URDF joint types on a serial chain)
    origin: np.ndarray  # 4x4, parent link -> joint frame at zero
    axis: np.ndarray  # (3,) unit, in the joint frame

    def motion(self, x: float) -> np.ndarray:
        """The 4x4 motion of a moving joint at position ``x`` (radians, or metres if prismatic)."""
        T = np.eye(4)
        if self.type == "prismatic":
            T[:3, 3] = self.axis * x
        else:  # Rodrigues: rotation by x about the unit axis
            a = self.axis
            K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
            T[:3, :3] = np.eye(3) + np.sin(x) * K + (1 - np.cos(x)) * (K @ K)
        return T


def _origin(joint: ET.Element) -> np.ndarray:
    """A joint's ``<origin xyz rpy>`` (URDF: roll, pitch, yaw about the fixed x, y, z axes) as 4x4."""
    el = joint.find("origin")
    T = np.eye(4)
    if el is not None:
        T[:3, :3] = Rotation.from_euler("xyz", [float(v) for v in el.get("rpy", "0 0 0").split()]).as_matrix()
        T[:3, 3] = [float(v) for v in el.get("xyz", "0 0 0").split()]
    return T


class UrdfChain:
    """The chain from a URDF's root link to ``frame``; ``joints`` names its moving joints in the order
    of the joint vector given to :meth:`pose` (radians, metres for prismatic joints)."""

    def __init__(self, urdf: str | Path, frame: str, joints: list[str]):
        try:
            robot = ET.parse(urdf).getroot()
        except (OSError, ET.ParseError) as exc:
            raise DpError(f"{urdf}: cannot read the URDF ({exc})") from None
        by_child = {j.find("child").get("link"): j for j in robot.findall("joint")}
        if frame not in {link.get("name") for link in robot.findall("link")}:
            raise DpError(f"{urdf}: no link {frame!r} (links: {sorted(link.get('name') for link in robot.findall('link'))})")
        chain, link = [], frame
        while link in by_child:  # walk up to the root
            j = by_child[link]
            axis = np.array([float(v) for v in (j.find("axis").get("xyz") if j.find("axis") is not None else "1 0 0").split()])
            kind = j.get("type")
            if kind not in (*MOVING, "fixed"):
                raise DpError(f"{urdf}: joint {j.get('name')!r} is of type {kind!r} (a serial chain has {MOVING} or fixed)")
            chain.append(ChainJoint(j.get("name"), kind, _origin(j), axis / max(np.linalg.norm(axis), 1e-12)))
            link = j.find("parent").get("link")
        self.chain = chain[::-1]
        moving = [j.name for j in self.chain if j.type in MOVING]
        if sorted(moving) != sorted(joints):
            raise DpError(f"{urdf}: the chain from {link!r} to {frame!r} moves joints {moving}; the driver names {joints}")
        self.index = {name: joints.index(name) for name in moving}

    def transform(self, q: np.ndarray) -> np.ndarray:
        """The 4x4 pose of the frame in the root link's frame at joint positions ``q``."""
        T = np.eye(4)
        for j in self.chain:
            T = T @ j.origin
            if j.type != "fixed":
                T = T @ j.motion(float(q[self.index[j.name]]))
        return T

    def pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), quaternion x, y, z, w) of the frame at joint positions ``q``."""
        T = self.transform(q)
        return T[:3, 3].copy(), quaternion(T[:3, :3])


def quaternion(R: np.ndarray) -> np.ndarray:
    """The unit quaternion (x, y, z, w; w >= 0) of a rotation matrix, from its largest component
    (Shepperd's method; scipy's ``from_matrix`` re-orthogonalises, at several times the cost)."""
    t = np.trace(R)
    i = int(np.argmax([R[0, 0], R[1, 1], R[2, 2], t]))
    if i == 3:
        q = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1], 1 + t])
    else:
        j, k = (i + 1) % 3, (i + 2) % 3
        q = np.empty(4)
        q[i] = 1 + 2 * R[i, i] - t
        q[j], q[k], q[3] = R[j, i] + R[i, j], R[k, i] + R[i, k], R[k, j] - R[j, k]
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q
