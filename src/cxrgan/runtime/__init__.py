"""Where and how tensors compute, below every other layer: device and precision choice, random state
(:mod:`.execution`) and the process group of a ``torchrun`` launch (:mod:`.distributed`)."""
