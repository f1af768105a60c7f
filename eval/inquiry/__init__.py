"""LaMAI (Pang et al. 2024, arXiv 2402.03719): an assistant that asks clarifying questions, chosen by
active learning, before it answers. :mod:`eval.inquiry.loop` holds the loop and its baselines,
:mod:`eval.inquiry.scorers` the two question scorers, :mod:`eval.inquiry.world` the hidden-slot world,
:mod:`eval.inquiry.users` the simulated users, :mod:`eval.inquiry.llm` the language-model assistant and
:mod:`eval.inquiry.evaluate` the ``curate eval gsm8k-hidden`` run."""
