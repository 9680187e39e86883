"""LoRA training of Stable Diffusion models: the training loop (`trainer`), image datasets encoded once
(`dataset`), writing kohya-layout LoRA files atomically (`lora_file`) and the loss plot (`loss_plot`). Uses the
model layer (`diffusion`); nothing there uses it. Knows nothing of node classes, HTTP or the executor."""
