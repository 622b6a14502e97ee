"""The study level: every model x every dataset as ordinary run directories, then the
cross-family tables of the paper (``vrp study``)."""

from vrp.study.config import StudyConfig, run_name
from vrp.study.runner import finished, run_study

__all__ = ["StudyConfig", "finished", "run_name", "run_study"]
