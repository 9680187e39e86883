"""The built-in nodes: ComfyUI's core Stable Diffusion node set, on diffusers and transformers.

`NODE_CLASS_MAPPINGS` and `NODE_DISPLAY_NAME_MAPPINGS` have the shape plugins export; the engine registers
them with `registry.register_mappings(...)` like any plugin's. Node modules import torch and diffusers lazily
where they can; nodes read folders and models through `nodes.environment.current_environment()` and know
nothing of HTTP.
"""
from __future__ import annotations

from nodes.conditioning import CLIPSetLastLayer, CLIPTextEncode
from nodes.image import ImageScale, LoadImage, PreviewImage, SaveImage
from nodes.latent import (
    EmptyLatentImage,
    LatentUpscale,
    LatentUpscaleBy,
    VAEDecode,
    VAEDecodeTiled,
    VAEEncode,
    VAEEncodeTiled,
)
from nodes.loaders import (
    CheckpointLoaderSimple,
    DiffusersLoader,
    DualCLIPLoader,
    LoraLoader,
    LoraLoaderModelOnly,
    QuadrupleCLIPLoader,
    TripleCLIPLoader,
    UNETLoader,
    VAELoader,
)
from nodes.sampling import KSampler, KSamplerAdvanced
from nodes.training import LoadImageDataset, PlotLoss, TrainLoRA

MAX_RESOLUTION = 16384  # ComfyUI's `nodes.MAX_RESOLUTION`, which plugins import

NODE_CLASS_MAPPINGS: dict[str, type] = {
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "DiffusersLoader": DiffusersLoader,
    "VAELoader": VAELoader,
    "UNETLoader": UNETLoader,
    "DualCLIPLoader": DualCLIPLoader,
    "TripleCLIPLoader": TripleCLIPLoader,
    "QuadrupleCLIPLoader": QuadrupleCLIPLoader,
    "LoraLoader": LoraLoader,
    "LoraLoaderModelOnly": LoraLoaderModelOnly,
    "CLIPTextEncode": CLIPTextEncode,
    "CLIPSetLastLayer": CLIPSetLastLayer,
    "EmptyLatentImage": EmptyLatentImage,
    "LatentUpscale": LatentUpscale,
    "LatentUpscaleBy": LatentUpscaleBy,
    "VAEDecode": VAEDecode,
    "VAEEncode": VAEEncode,
    "VAEDecodeTiled": VAEDecodeTiled,
    "VAEEncodeTiled": VAEEncodeTiled,
    "KSampler": KSampler,
    "KSamplerAdvanced": KSamplerAdvanced,
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "ImageScale": ImageScale,
    "LoadImageDataset": LoadImageDataset,
    "TrainLoRA": TrainLoRA,
    "PlotLoss": PlotLoss,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "DiffusersLoader": "Load Diffusers Model",
    "VAELoader": "Load VAE",
    "UNETLoader": "Load Diffusion Model",
    "DualCLIPLoader": "DualCLIPLoader",
    "TripleCLIPLoader": "Triple CLIP Loader",
    "QuadrupleCLIPLoader": "Quadruple CLIP Loader",
    "LoraLoader": "Load LoRA",
    "LoraLoaderModelOnly": "Load LoRA (Model Only)",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "CLIPSetLastLayer": "CLIP Set Last Layer",
    "EmptyLatentImage": "Empty Latent Image",
    "LatentUpscale": "Upscale Latent",
    "LatentUpscaleBy": "Upscale Latent By",
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "VAEDecodeTiled": "VAE Decode (Tiled)",
    "VAEEncodeTiled": "VAE Encode (Tiled)",
    "KSampler": "KSampler",
    "KSamplerAdvanced": "KSampler (Advanced)",
    "LoadImage": "Load Image",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "ImageScale": "Upscale Image",
    "LoadImageDataset": "Load Image Dataset",
    "TrainLoRA": "Train LoRA",
    "PlotLoss": "Plot Loss",
}

# Families with their own node modules register their nodes here (each module exports its own mappings).
from nodes import flux as _flux  # noqa: E402
from nodes import sd3 as _sd3  # noqa: E402
from nodes import sdxl as _sdxl  # noqa: E402
from nodes import unclip as _unclip  # noqa: E402

for _family in (_flux, _sdxl, _sd3, _unclip):
    NODE_CLASS_MAPPINGS.update(_family.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_family.NODE_DISPLAY_NAME_MAPPINGS)

# Image editing: masks, inpainting, InstructPix2Pix, folders of images.
from nodes import image_batch as _image_batch  # noqa: E402
from nodes import inpaint as _inpaint  # noqa: E402
from nodes import mask as _mask  # noqa: E402

for _editing in (_mask, _inpaint, _image_batch):
    NODE_CLASS_MAPPINGS.update(_editing.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_editing.NODE_DISPLAY_NAME_MAPPINGS)

# Optional speed-ups of a model's network (torch.compile, channels-last, attention slicing).
from nodes import speedups as _speedups  # noqa: E402

NODE_CLASS_MAPPINGS.update(_speedups.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_speedups.NODE_DISPLAY_NAME_MAPPINGS)

# Sampling in parts (NOISE, GUIDER, SAMPLER, SIGMAS) and the MODEL patches of the sigma-based samplers
# (noise schedules, RescaleCFG and friends, and the guidance patches: APG, PAG, SAG, SLG, ...).
from nodes import custom_sampling as _custom_sampling  # noqa: E402
from nodes import guidance_patches as _guidance_patches  # noqa: E402
from nodes import model_patches as _model_patches  # noqa: E402

for _sampling_parts in (_custom_sampling, _model_patches, _guidance_patches):
    NODE_CLASS_MAPPINGS.update(_sampling_parts.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_sampling_parts.NODE_DISPLAY_NAME_MAPPINGS)

# Latent operations: compositing, blending, arithmetic, batches and their batch_index, crop/flip/rotate.
from nodes import latent_ops as _latent_ops  # noqa: E402

NODE_CLASS_MAPPINGS.update(_latent_ops.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_latent_ops.NODE_DISPLAY_NAME_MAPPINGS)

# Utilities: primitives, the lazy If/Else switch, math expressions, Preview Any, and the text (string) nodes.
from nodes import strings as _strings  # noqa: E402
from nodes import utilities as _utilities  # noqa: E402

for _utility in (_utilities, _strings):
    NODE_CLASS_MAPPINGS.update(_utility.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_utility.NODE_DISPLAY_NAME_MAPPINGS)

# Image operations (batches, crop/flip/rotate/stitch, padding, blend, blur, sharpen, quantize, morphology, alpha
# compositing, Resize Image/Mask) and the image save/load nodes of nodes/image.py (animated PNG/WebP, from outputs).
from nodes import image as _image  # noqa: E402
from nodes import image_ops as _image_ops  # noqa: E402

for _images in (_image, _image_ops):
    NODE_CLASS_MAPPINGS.update(_images.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_images.NODE_DISPLAY_NAME_MAPPINGS)

# Conditioning arithmetic and regional prompting (combine, average, concat, zero out, areas, masks, timestep
# ranges), and image prompts (CLIP vision, style models).
from nodes import clip_vision as _clip_vision  # noqa: E402
from nodes import conditioning_ops as _conditioning_ops  # noqa: E402

for _conditioning_nodes in (_conditioning_ops, _clip_vision):
    NODE_CLASS_MAPPINGS.update(_conditioning_nodes.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_conditioning_nodes.NODE_DISPLAY_NAME_MAPPINGS)

# Upscaling: upscale models (spandrel) run in tiles, and resizing by a factor, to a pixel count or a longest side.
from nodes import upscale as _upscale  # noqa: E402

NODE_CLASS_MAPPINGS.update(_upscale.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_upscale.NODE_DISPLAY_NAME_MAPPINGS)

# Model merging and saving: merges (simple, blocks, add, subtract), checkpoint/model/VAE saving, LoRA extraction,
# and the old loaders (checkpoint with a yaml config, hypernetworks).
from nodes import model_merging as _model_merging  # noqa: E402
from nodes import model_saving as _model_saving  # noqa: E402
from nodes import old_loaders as _old_loaders  # noqa: E402

for _merging in (_model_merging, _model_saving, _old_loaders):
    NODE_CLASS_MAPPINGS.update(_merging.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_merging.NODE_DISPLAY_NAME_MAPPINGS)

# Patches of the UNet while it samples (FreeU, deep shrink, HyperTile, ToMe, Epsilon Scaling, Differential Diffusion).
from nodes import unet_patches as _unet_patches  # noqa: E402

NODE_CLASS_MAPPINGS.update(_unet_patches.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_unet_patches.NODE_DISPLAY_NAME_MAPPINGS)

# Text encoders: CLIPLoader (every type of a family we run), CLIP merges (simple, add, subtract) and CLIPSave.
from nodes import text_encoders as _text_encoders  # noqa: E402

NODE_CLASS_MAPPINGS.update(_text_encoders.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_text_encoders.NODE_DISPLAY_NAME_MAPPINGS)

# ControlNets: loaders, the apply nodes (attached to conditioning, run by the sampler), union types, inpainting
# ControlNets and the Canny edge preprocessor.
from nodes import controlnet as _controlnet  # noqa: E402

NODE_CLASS_MAPPINGS.update(_controlnet.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_controlnet.NODE_DISPLAY_NAME_MAPPINGS)

# ComfyUI's .latent files: SaveLatent and LoadLatent (raw VAE latents, as ComfyUI's LATENT holds them).
from nodes import latent_files as _latent_files  # noqa: E402

NODE_CLASS_MAPPINGS.update(_latent_files.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_latent_files.NODE_DISPLAY_NAME_MAPPINGS)

# Small core extras: attention multiply (UNet self/cross, CLIP), latent concat/cut and LATENT_OPERATIONs,
# image noise and the YCbCr split/join.
from nodes import attention_multiply as _attention_multiply  # noqa: E402
from nodes import image_extras as _image_extras  # noqa: E402
from nodes import latent_operations as _latent_operations  # noqa: E402

for _core_extras in (_attention_multiply, _latent_operations, _image_extras):
    NODE_CLASS_MAPPINGS.update(_core_extras.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_core_extras.NODE_DISPLAY_NAME_MAPPINGS)

# Lumina 2's text node: CLIPTextEncodeLumina2.
from nodes import lumina2 as _lumina2  # noqa: E402

NODE_CLASS_MAPPINGS.update(_lumina2.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_lumina2.NODE_DISPLAY_NAME_MAPPINGS)

# Qwen-Image-Edit's text nodes: TextEncodeQwenImageEdit, TextEncodeQwenImageEditPlus.
from nodes import qwen_image as _qwen_image  # noqa: E402

NODE_CLASS_MAPPINGS.update(_qwen_image.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_qwen_image.NODE_DISPLAY_NAME_MAPPINGS)

# FLUX.2's latent and schedule nodes: EmptyFlux2LatentImage, Flux2Scheduler.
from nodes import flux2 as _flux2  # noqa: E402

NODE_CLASS_MAPPINGS.update(_flux2.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_flux2.NODE_DISPLAY_NAME_MAPPINGS)

# HiDream's text node: CLIPTextEncodeHiDream.
from nodes import hidream as _hidream  # noqa: E402

NODE_CLASS_MAPPINGS.update(_hidream.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_hidream.NODE_DISPLAY_NAME_MAPPINGS)

# Video: CreateVideo, GetVideoComponents, LoadVideo, SaveVideo, SaveWEBM and the VIDEO value (PyAV).
from nodes import video as _video  # noqa: E402

NODE_CLASS_MAPPINGS.update(_video.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_video.NODE_DISPLAY_NAME_MAPPINGS)

# Sampling extras: SamplerEulerCFGpp, SamplerLCMUpscale, OptimalStepsScheduler, the guidance patches TCFG, FreSca,
# Mahiro, RenormCFG, PerpNeg (deprecated) and SkipLayerGuidanceDiTSimple, and ModelComputeDtype.
from nodes import sampling_extras as _sampling_extras  # noqa: E402

NODE_CLASS_MAPPINGS.update(_sampling_extras.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_sampling_extras.NODE_DISPLAY_NAME_MAPPINGS)

# SD2.1 unCLIP: unCLIPCheckpointLoader (MODEL, CLIP, VAE, CLIP_VISION of one checkpoint) and unCLIPConditioning.
from nodes import sd_unclip as _sd_unclip  # noqa: E402

NODE_CLASS_MAPPINGS.update(_sd_unclip.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_sd_unclip.NODE_DISPLAY_NAME_MAPPINGS)

# ComfyUI's training nodes: TrainLoraNode (LATENT + CONDITIONING -> LORA_MODEL), LoraModelLoader, SaveLoRANode,
# LossGraphNode and the image (and caption) folder loaders, on our LoRA trainer.
from nodes import comfy_training as _comfy_training  # noqa: E402

NODE_CLASS_MAPPINGS.update(_comfy_training.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_comfy_training.NODE_DISPLAY_NAME_MAPPINGS)

# GLIGEN for SD1.x: GLIGENLoader and GLIGENTextBoxApply (boxed phrases, applied by the SD sampling hooks).
from nodes import gligen as _gligen  # noqa: E402

NODE_CLASS_MAPPINGS.update(_gligen.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_gligen.NODE_DISPLAY_NAME_MAPPINGS)

# Step caches: EasyCache and LazyCache (MODEL -> MODEL; network calls skipped on steps predicted to change little).
from nodes import caching as _caching  # noqa: E402

NODE_CLASS_MAPPINGS.update(_caching.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_caching.NODE_DISPLAY_NAME_MAPPINGS)

# Hooks: ComfyUI's conditioning property nodes (Cond Set Props ..., Timesteps Range), HOOKS and keyframe makers,
# CombineHooks and SetClipHooks.
from nodes import hooks as _hooks  # noqa: E402

NODE_CLASS_MAPPINGS.update(_hooks.NODE_CLASS_MAPPINGS)
NODE_DISPLAY_NAME_MAPPINGS.update(_hooks.NODE_DISPLAY_NAME_MAPPINGS)

# ComfyUI's `nodes` module as plugins import it (`import nodes`): every registered class by name (looked up when
# asked, so nodes registered by blocks below count too), common_ksampler, and EXTENSION_WEB_DIRS (plugin name ->
# folder of its JavaScript; app/runtime.py serves the entries of loaded plugins).
from nodes.sampling import common_ksampler  # noqa: E402,F401

EXTENSION_WEB_DIRS: dict[str, str] = {}


def __getattr__(name: str) -> type:
    node_class = NODE_CLASS_MAPPINGS.get(name)
    if node_class is None:
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")
    return node_class
