"""Make a process honour trust_remote_code: false even where a library hard-codes True (ms-swift 4.6 loads
config, tokenizer and model with trust_remote_code=True whatever its caller asks).

`forbid_remote_code()` forces trust_remote_code=False in every transformers Auto* loader and makes the one
function that imports a model repository's Python module refuse, so no model-folder code can run. The
ms-swift plugin calls it when the recipe says `model.trust_remote_code: false`.
"""

from __future__ import annotations

import functools

MESSAGE = (
    "unifier: this model needs its own Python code, and model.trust_remote_code is false; set it to true "
    "only if you trust the code"
)


def forbid_remote_code() -> None:
    from transformers import dynamic_module_utils
    from transformers.models.auto import (
        auto_factory,
        configuration_auto,
        feature_extraction_auto,
        image_processing_auto,
        processing_auto,
        tokenization_auto,
    )

    loaders = [
        configuration_auto.AutoConfig,
        tokenization_auto.AutoTokenizer,
        processing_auto.AutoProcessor,
        image_processing_auto.AutoImageProcessor,
        feature_extraction_auto.AutoFeatureExtractor,
        auto_factory._BaseAutoModelClass,
    ]
    try:
        from transformers.models.auto import video_processing_auto

        loaders.append(video_processing_auto.AutoVideoProcessor)
    except ImportError:
        pass
    for loader in loaders:  # the real classes in their own modules (the top-level names may be dummies)
        if not getattr(loader.from_pretrained, "_unifier_untrusted", False):
            loader.from_pretrained = _untrusted(loader.from_pretrained.__func__)
    dynamic_module_utils.get_class_in_module = _refuse  # the only path that imports a repository's module
    try:
        import transformers.generation.utils as generation_utils

        generation_utils.get_class_in_module = _refuse  # custom_generate imports it by name
    except ImportError:
        pass


def _untrusted(function):
    @functools.wraps(function)
    def load(cls, *args, **kwargs):
        kwargs["trust_remote_code"] = False
        return function(cls, *args, **kwargs)

    load._unifier_untrusted = True
    return classmethod(load)


def _refuse(*args, **kwargs):
    raise ValueError(MESSAGE)
