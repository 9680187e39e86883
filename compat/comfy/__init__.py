"""The shallow part of ComfyUI's `comfy` package that node packs import (see compat/README.md)."""
