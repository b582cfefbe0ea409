"""Training: the head, the transactional step, and (later) the controls that guard it."""
