"""Network modules: layers, CSPNeXt backbone, PAFPN neck, SepBN head, detector."""
