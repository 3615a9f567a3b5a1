"""HELPNet's training signals: HPC views, the EGPL ensemble, SPR priors and the losses."""

from helpnet.method.objective import HelpnetObjective, ObjectiveSettings

__all__ = ["HelpnetObjective", "ObjectiveSettings"]
