"""The paper's baselines as trainers on TRL's GRPOTrainer, in the style of SOUPTrainer."""

from .luffy import LUFFYConfig, LUFFYTrainer

__all__ = ["LUFFYConfig", "LUFFYTrainer"]
