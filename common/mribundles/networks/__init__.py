"""Reconstruction networks."""

from mribundles.networks.image_unet import ImageUnet
from mribundles.networks.unet import NormUnet, Unet
from mribundles.networks.varnet import VarNet

__all__ = ["ImageUnet", "NormUnet", "Unet", "VarNet"]
