"""The experiment: a GPT-2 model, its data, its command line and its training loop."""
