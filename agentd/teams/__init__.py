"""Teams (issue 15): agents that work together (agentd.teams.service), with a
Unix group and a shared directory each (agentd.teams.dirs)."""

from .dirs import TeamDirs, check_name, group_name
from .service import Team, Teams

__all__ = ["Team", "TeamDirs", "Teams", "check_name", "group_name"]
