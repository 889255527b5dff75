"""LeRobot imports third-party robot plugins (``lerobot_robot_*`` packages) here; the fake has none."""


def register_third_party_plugins() -> None:
    pass
