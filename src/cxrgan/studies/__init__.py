"""Studies that load trained runs and write a report folder: the measurement suite of a run (:mod:`.suite`) and
the usefulness of synthetic images to a classifier, TSTR and the augmentation study (:mod:`.usefulness`)."""
