"""rtmkit: the RTMDet family of real-time detectors in plain PyTorch."""

__version__ = "0.1.0"

from .api import RTMDet  # noqa: E402
from .config import CONFIGS, PostprocessConfig, RTMDetConfig, get_config, list_configs  # noqa: E402
from .results import Result  # noqa: E402

__all__ = ["RTMDet", "Result", "RTMDetConfig", "PostprocessConfig", "CONFIGS", "get_config", "list_configs",
           "__version__"]
