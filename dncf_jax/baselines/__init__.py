"""Baselines the paper compares DNCF with (Table 2, Figures 1-4).

TV (Chambolle 2004) denoising and TV-regularised fits, bicubic
interpolation, Deep Image Prior (Ulyanov et al. 2018) and DeepRED
(Mataev et al. 2019) with TV as the RED denoiser; non-local means and
cycle-spun wavelet shrinkage (scikit-image's) for whole photos. Same
physics operators as DNCF (:mod:`dncf_jax.physics`).
"""

from dncf_jax.baselines import bicubic, deepred, dip, nlm, tv, wavelet
from dncf_jax.baselines.bicubic import bicubic_upsample
from dncf_jax.baselines.deepred import (DeepREDConfig, deepred_config,
                                        deepred_restore)
from dncf_jax.baselines.dip import DIPConfig, dip_config, dip_restore
from dncf_jax.baselines.nlm import nlm_denoise
from dncf_jax.baselines.tv import (tv_denoise, tv_objective, tv_restore,
                                   tv_weight_discrepancy, tv_weight_oracle)
from dncf_jax.baselines.wavelet import nlm_wavelet_denoise, wavelet_denoise

__all__ = ["DIPConfig", "DeepREDConfig", "bicubic", "bicubic_upsample",
           "deepred", "deepred_config", "deepred_restore", "dip", "dip_config",
           "dip_restore", "nlm", "nlm_denoise", "nlm_wavelet_denoise", "tv",
           "tv_denoise", "tv_objective", "tv_restore", "tv_weight_discrepancy",
           "tv_weight_oracle", "wavelet", "wavelet_denoise"]
