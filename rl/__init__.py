"""GRPO training on TRL with rewards from eval/ tasks (LearnAlign's training side)."""
