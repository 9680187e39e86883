"""`comfy.k_diffusion` for plugins: the k-diffusion helpers packs import (see `sampling`)."""
