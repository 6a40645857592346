"""Network architectures and the model zoo."""

from .zoo import ARCHITECTURES, ColorModel, ModelConfig, build_model, load_model, preset_config

__all__ = ["ARCHITECTURES", "ColorModel", "ModelConfig", "build_model", "load_model", "preset_config"]
