"""The LLM layer, on the ground layer (:mod:`curate.core`): dataset loading and column choice
(:mod:`.data`), model and tokenizer loading (:mod:`.models`), prompt rendering (:mod:`.chat`),
token batching (:mod:`.batching`), batched generation with HF or vLLM (:mod:`.generation`) and the
tiny models that tests and the offline demo build (:mod:`.tiny`). eval/, sft/, rl/ and the
selectors build on it; vision/ does not."""
