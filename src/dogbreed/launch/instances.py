"""What an instance type and an image URI offer: GPUs and their memory, the AMI whose driver runs our CUDA, the serve
image that fits (CPU or CUDA), and the ECR URI's region and account.

The serve image's torch is built for CUDA 12.8 (docker/, the base image). AWS documents driver 470 (CUDA 11.4) as the
real-time default on ml.g4dn, ml.g5 and ml.p4d and applies no AMI override by itself, so a GPU endpoint without
``InferenceAmiVersion`` would serve on the CPU. The values below are botocore's service model enums
(``ProductionVariantInferenceAmiVersion``; ``TransformResources.TransformAmiVersion``'s documented values):

    ================================  =======  ====  =====================================================
    AMI version                       driver   CUDA  used for
    ================================  =======  ====  =====================================================
    al2023-ami-sagemaker-inference-   580      13.0  real-time and async endpoints on every GPU family below
    gpu-4-1                                          (a 580 driver runs CUDA 12.8 images)
    al2-ami-sagemaker-batch-gpu-535   535      12.2  Batch Transform (the newest batch AMI): CUDA 12.8 runs on
                                                     it through CUDA's minor-version compatibility (12.x on
                                                     driver >= 525; our wheels carry SASS for these GPUs)
    ================================  =======  ====  =====================================================

Per family (``GPU_FAMILIES``): ml.g4dn (T4), g5 (A10G), g6 (L4), g6e (L40S), g7e (RTX PRO 6000 Blackwell), p4d and
p4de (A100), p5 (H100), p5e and p5en (H200) get the two AMIs above (transform only where AWS offers the family for
Batch Transform: g4dn, g5, g6, g6e); ml.p2 (K80) and ml.p3 (V100) are refused, our torch has no kernels for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CUDA_OF_IMAGE = "12.8"
INFERENCE_AMI = "al2023-ami-sagemaker-inference-gpu-4-1"   # driver 580, CUDA 13.0
TRANSFORM_AMI = "al2-ami-sagemaker-batch-gpu-535"           # driver 535, CUDA 12.2 (+ minor-version compatibility)


@dataclass(frozen=True)
class Family:
    gpu: str
    gpu_memory_gb: int
    inference_ami: str | None = INFERENCE_AMI
    transform_ami: str | None = TRANSFORM_AMI
    unsupported: str | None = None  # why our image cannot use this GPU at all


# Our torch (2.9.1, CUDA 12.8 wheels) carries kernels for sm_75 and newer: the CUDA 12.8 builds dropped Maxwell,
# Pascal and Volta (sm_50 to sm_70) from PyTorch 2.8 on, so a K80 or V100 would serve on the CPU.
NO_KERNELS = "torch 2.9.1's CUDA 12.8 wheels have no kernels for it (sm_75 and newer only): pick ml.g4dn or newer"

# ml.<family>.<size>: the GPU families SageMaker hosts (botocore's ProductionVariantInstanceType and
# TransformInstanceType enums), their GPU and its memory (one GPU's).
GPU_FAMILIES: dict[str, Family] = {
    "g4dn": Family("T4", 16),
    "g5": Family("A10G", 24),
    "g6": Family("L4", 24),
    "g6e": Family("L40S", 48),
    "g7e": Family("RTX PRO 6000 Blackwell", 96, transform_ami=None),  # no Batch Transform on it
    "p4d": Family("A100", 40, transform_ami=None),  # no Batch Transform on it
    "p4de": Family("A100", 80, transform_ami=None),  # no Batch Transform on it
    "p5": Family("H100", 80, transform_ami=None),  # no Batch Transform on it
    "p5e": Family("H200", 141, transform_ami=None),  # no Batch Transform on it
    "p5en": Family("H200", 141, transform_ami=None),  # no Batch Transform on it
    "p2": Family("K80", 12, None, None, unsupported=f"the K80 (sm_37): {NO_KERNELS}"),
    "p3": Family("V100", 16, None, None, unsupported=f"the V100 (sm_70): {NO_KERNELS}"),
}

# GPU memory (MB) one training image takes, every layer trained, mixed precision, 224 px (activations, gradients;
# measured figures of the reference trainers: ResNet50 fits batch 256 in a 16 GB V100 with AMP), plus the fixed
# part (weights, optimizer state, CUDA context). A model not listed is not checked.
TRAINING_MB_PER_IMAGE = {"resnet18": 22, "resnet34": 32, "resnet50": 52, "resnet101": 78, "efficientnet_b0": 48,
                         "mobilenet_v3_large": 30, "convnext_tiny": 70, "vit_b_16": 60}
TRAINING_FIXED_MB = 1500

# Families whose instances carry local NVMe instance storage (EC2's "instance store volumes" table, cut to the
# families SageMaker offers in botocore's instance-type enums, plus the Intel 'd' families AWS may add). SageMaker
# puts the job's or endpoint's storage on those disks, which their hardware encrypts, and refuses a volume KMS key
# there: CreateTrainingJob's ResourceConfig.VolumeKmsKeyId, CreateEndpointConfig's KmsKeyId and
# TransformResources.VolumeKmsKeyId all say "You can't request a ... KmsKeyId when using an instance type with local
# storage". Not here, because they are EBS-only: inf1, inf2, c5n, c6in, p2, p3, and every family without a 'd'.
LOCAL_STORAGE_FAMILIES = frozenset({
    "g4dn", "g5", "g6", "g6e", "g7e", "dl1",
    "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "p6-b300", "p6e-gb200",
    "trn1", "trn1n", "trn2",
    "c5d", "c6gd", "c6id", "m5d", "m6gd", "m6id", "r5d", "r6gd", "r6id", "r7gd",
})

ECR_URI = re.compile(r"(?P<account>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z]{2}(-[a-z]+)+-\d)\.amazonaws\.com(\.cn)?/\S+")


def family(instance_type: str | None) -> str:
    """``ml.g4dn.xlarge`` -> ``g4dn``."""
    parts = (instance_type or "").split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "ml" else ""


def gpu_family(instance_type: str | None) -> Family | None:
    return GPU_FAMILIES.get(family(instance_type))


def has_local_storage(instance_type: str | None) -> bool:
    """Whether the instance type's storage is local NVMe, encrypted by its hardware (no volume KMS key there)."""
    return family(instance_type) in LOCAL_STORAGE_FAMILIES


def is_gpu(instance_type: str | None) -> bool:
    """Whether the instance type has NVIDIA GPUs (every ml.g* and ml.p* family)."""
    return bool(re.fullmatch(r"[gp]\d+[a-z]*", family(instance_type)))


def ami_problem(instance_type: str, ami: str | None, field: str) -> str | None:
    """The AMI field as validated per family: a GPU type needs one whose driver runs CUDA 12.8, a CPU type none."""
    known = gpu_family(instance_type)
    if known is not None and known.unsupported:
        return f"{instance_type}: {known.unsupported}"
    if is_gpu(instance_type) and known is None:
        return (f"{instance_type}: a GPU family dogbreed has no {field} for (launch/instances.py GPU_FAMILIES): "
                f"add it there with an AMI whose driver runs CUDA {CUDA_OF_IMAGE}")
    if known is None:
        return f"{instance_type} has no GPU: send no {field}" if ami else None
    wanted = known.inference_ami if field == "InferenceAmiVersion" else known.transform_ami
    if wanted is None:
        return f"{instance_type} ({known.gpu}) offers no {field}: SageMaker runs no such job on this family"
    if ami != wanted:
        return f"{instance_type} ({known.gpu}) needs {field} {wanted} (its driver runs CUDA {CUDA_OF_IMAGE}), not {ami!r}"
    return None


def inference_ami(instance_type: str | None) -> dict:
    """The production variant's ``InferenceAmiVersion`` for a GPU type; nothing for CPU types and serverless."""
    known = gpu_family(instance_type)
    return {"InferenceAmiVersion": known.inference_ami} if known and known.inference_ami else {}


def transform_ami(instance_type: str | None) -> dict:
    known = gpu_family(instance_type)
    return {"TransformAmiVersion": known.transform_ami} if known and known.transform_ami else {}


def largest_batch(model: str, instance_type: str | None, input_size: int = 224) -> int | None:
    """The largest power-of-two batch that fits one GPU of the instance for the model trained in full at
    ``input_size`` pixels a side (activations grow with the pixels: the table's 224 px scaled by the area); None
    where either is not in the tables (nothing to check)."""
    known, per_image = gpu_family(instance_type), TRAINING_MB_PER_IMAGE.get(model)
    if not known or not per_image:
        return None
    fits = (known.gpu_memory_gb * 1024 - TRAINING_FIXED_MB) // (per_image * (input_size / 224) ** 2)
    batch = 1
    while batch * 2 <= fits:
        batch *= 2
    return batch


def serve_image(config, instance_type: str | None, serverless: bool) -> tuple[str | None, str]:
    """(image URI, why): the CUDA serve image for GPU instances, the CPU one (``serve_image_cpu``) for CPU instances and
    serverless; ``serving.image = "cuda"`` or ``"cpu"`` overrides. Without a CPU image in the config the CUDA one
    serves everywhere (it runs on CPUs, at 8 GB)."""
    choice = (config["serving"].get("image") or "auto").lower()
    wanted = choice if choice in ("cuda", "cpu") else ("cuda" if is_gpu(instance_type) and not serverless else "cpu")
    if wanted == "cpu" and config.get("serve_image_cpu"):
        return config["serve_image_cpu"], "the CPU serve image (serve_image_cpu)"
    if wanted == "cpu":
        return config.get("serve_image"), "the CUDA serve image: no serve_image_cpu in the config (make push prints it)"
    return config.get("serve_image"), "the CUDA serve image (serve_image)"


def ecr_region_account(uri: str | None) -> tuple[str, str] | None:
    """(region, account) of an ECR image URI; None for another registry."""
    found = ECR_URI.fullmatch(uri or "")
    return (found["region"], found["account"]) if found else None


def image_problem(what: str, uri: str | None, region: str | None, account: str | None) -> str | None:
    """An ECR image in another region than the job (AWS refuses cross-region pulls), or another account than the
    role's (it would need a repository policy: make push pushes to the job's own account)."""
    found = ecr_region_account(uri)
    if not found:
        return None
    image_region, image_account = found
    if region and image_region != region:
        return (f"{what} {uri} is in {image_region}, the job in {region}: SageMaker pulls only from the job's region "
                f"(push the images there: make push uses the same region as the launchers)")
    if account and image_account != account:
        return f"{what} {uri} is in account {image_account}, the role in {account}: push the images to {account}"
    return None
