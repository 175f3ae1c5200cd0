"""Reconstruction and registration networks."""

from mribundles.networks.image_unet import ImageUnet
from mribundles.networks.reconresnet import ReconResNet
from mribundles.networks.recurrent_varnet import RecurrentVarNet
from mribundles.networks.registration import CoarseVoxelMorph
from mribundles.networks.superres import ResidualUNet3d
from mribundles.networks.unet import NormUnet, Unet
from mribundles.networks.varnet import VarNet

__all__ = ["CoarseVoxelMorph", "ImageUnet", "NormUnet", "ReconResNet", "RecurrentVarNet", "ResidualUNet3d", "Unet", "VarNet"]
