"""Training components: target assignment (``assigner``), losses (``losses``) and the loss glue (``criterion``)."""
