"""How the shared sampling loop drives an SD1.x/SD2.x UNet: the discrete-schedule hooks unchanged (noise or v
prediction, every sampler and scheduler of the shared tables). Knows nothing of nodes or files."""
from __future__ import annotations

from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling.discrete import DiscreteSampling


class SdSampling(DiscreteSampling):
    family_title = "SD1.x/SD2.x"
    latent_format = LatentFormat.from_config(config_beside(__file__, "sd1.json")["vae"])  # SD2's is the same


SD_SAMPLING = SdSampling()
