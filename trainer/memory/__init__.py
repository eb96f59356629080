"""GPU memory for the real base models: plan (torch-free), measure and apply memory modes."""
