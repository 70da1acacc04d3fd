from dsm.layers.rep_conv import RepConv

__all__ = ["RepConv"]
