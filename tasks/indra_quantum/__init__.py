"""indra-quantum: corpora, teacher logits, the Indra model, its training."""
