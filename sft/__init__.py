"""Supervised fine-tuning on TRL's SFTTrainer, with CodeACT's Dynamic Pack."""
