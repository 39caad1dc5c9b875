"""SageMaker Debugger and Profiler: off unless asked for (training.debugger_service, training.profiler_service).

AWS closed Debugger to new customers on 2026-07-30, and SageMaker Profiler ends on 2027-06-30. By default a job
asks for neither: the training program writes its smdebug trial to ``debug/`` beside its checkpoints (asked for
through DOGBREED_DEBUG_COLLECTIONS, see training.hooks), and its torch.profiler traces and system samples to
its output; ``dogbreed debug report JOB`` and ``dogbreed profile report JOB`` read them. For accounts that still
have the services, ``--debugger-service`` and ``--profiler-service`` add their configs to the CreateTrainingJob
request: SDK v3's ModelTrainer has no such fields, only the low-level CreateTrainingJob (``TrainingJob.create``)
does.
"""

from __future__ import annotations

from ..env import DOGBREED_DEBUG_COLLECTIONS
from .config import Config

# The seed's Debugger rules (smdebug_rulesconfig's names).
DEBUGGER_RULES = ("vanishing_gradient", "overfit", "overtraining", "poor_weight_initialization", "loss_not_decreasing")
RULE_IMAGE_PLACEHOLDER = "DEFAULT_RULE_EVALUATOR_IMAGE"  # what the SDK's Rule.sagemaker leaves for the region's image


def debug_collections(config: Config) -> dict[str, str]:
    """Each smdebug collection the job saves and its save interval in steps (training.debug_collections)."""
    return {str(name): str(int(every)) for name, every in config["training"]["debug_collections"].items()}


def trial_environment(config: Config) -> dict[str, str]:
    """The environment that has the training program write its smdebug trial to ``debug/`` beside its
    checkpoints, which SageMaker syncs to the checkpoint prefix while the job runs."""
    return {DOGBREED_DEBUG_COLLECTIONS: ",".join(f"{k}={v}" for k, v in debug_collections(config).items())}


def debug_environment(config: Config) -> dict[str, str]:
    """A training job's: the trial beside the checkpoints, unless the Debugger service's hook config drives the hook."""
    return {} if config["training"].get("debugger_service") else trial_environment(config)


def _rule_image(config: Config) -> str:
    from sagemaker.core.debugger import get_rule_container_image_uri  # SDK v3: seconds to import

    return get_rule_container_image_uri(None, config["region"])


def _with_image(rule: dict, image: str) -> dict:
    return {**rule, "RuleEvaluatorImage": image} if rule.get("RuleEvaluatorImage") == RULE_IMAGE_PLACEHOLDER else rule


def debugger_part(config: Config, image: str) -> dict:
    """DebugHookConfig (the trial to S3, the configured collections) and the seed's built-in rules, in the API's
    form (the SDK's rule helpers write that form)."""
    from sagemaker.core.debugger import Rule, rule_configs

    hook = {"S3OutputPath": f"{config.s3_root}/debug-output", "CollectionConfigurations": [
        {"CollectionName": name, "CollectionParameters": {"save_interval": every}}
        for name, every in debug_collections(config).items()]}
    rules = [_with_image(Rule.sagemaker(getattr(rule_configs, name)()).to_debugger_rule_config_dict(), image)
             for name in DEBUGGER_RULES]
    return {"DebugHookConfig": hook, "DebugRuleConfigurations": rules}


def profiler_part(config: Config, image: str) -> dict:
    """ProfilerConfig (system metrics every 500 ms) and the ProfilerReport rule."""
    from sagemaker.core.debugger import ProfilerRule, rule_configs

    rule = _with_image(ProfilerRule.sagemaker(rule_configs.ProfilerReport()).to_profiler_rule_config_dict(), image)
    return {"ProfilerConfig": {"S3OutputPath": f"{config.s3_root}/profiler-output", "ProfilingIntervalInMilliseconds": 500},
            "ProfilerRuleConfigurations": [rule]}


def debugger_request(config: Config) -> dict:
    """The CreateTrainingJob fields the services need: none unless the config asks for them."""
    training = config["training"]
    if not (training.get("debugger_service") or training.get("profiler_service")):
        return {}
    image, request = _rule_image(config), {}
    if training.get("debugger_service"):
        request.update(debugger_part(config, image))
    if training.get("profiler_service"):
        request.update(profiler_part(config, image))
    return request
