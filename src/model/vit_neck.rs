//! The tracker's neck of SAM 3 (`Sam3DualViTDetNeck`'s `sam2_convs`, `sam3/model/necks.py`,
//! docs/sam3-tracker.md §2.2): a ViTDet "simple FPN" on the trunk's one stride-14 map. Level 0
//! upsamples ×4 (two 2×2 transposed convolutions with a GELU between), level 1 ×2 (one), level 2
//! keeps the size; each then goes through a 1×1 and a 3×3 convolution to 256 channels. The
//! fourth level (×0.5, max-pool) is dropped by the backbone's scalp: its weights are checked and
//! kept, it is never computed.

use tch::Tensor;

use super::config::D_MODEL;
use super::layers::{Conv2d, ConvCfg, ConvTranspose2d, gelu};
use super::weights::{Weights, WeightsError};

/// One level's `conv_1x1` and `conv_3x3`.
#[derive(Debug)]
pub struct NeckOut {
    pub conv_1x1: Conv2d,
    pub conv_3x3: Conv2d,
}

impl NeckOut {
    fn new(w: &Weights, in_ch: i64) -> Result<Self, WeightsError> {
        Ok(NeckOut {
            conv_1x1: Conv2d::new(&w.pp("conv_1x1"), in_ch, D_MODEL, 1, ConvCfg::default())?,
            conv_3x3: Conv2d::new(
                &w.pp("conv_3x3"),
                D_MODEL,
                D_MODEL,
                3,
                ConvCfg {
                    padding: 1,
                    ..Default::default()
                },
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.conv_3x3.forward(&self.conv_1x1.forward(x))
    }
}

/// The three levels the tracker uses (and the weights of the dropped fourth).
#[derive(Debug)]
pub struct SimpleFpn {
    /// ×4: `dconv_2x2_0` (C → C/2), GELU, `dconv_2x2_1` (C/2 → C/4).
    pub up4: (ConvTranspose2d, ConvTranspose2d),
    /// ×2: `dconv_2x2` (C → C/2).
    pub up2: ConvTranspose2d,
    /// The 1×1 + 3×3 of levels 0, 1, 2.
    pub outs: [NeckOut; 3],
    /// Level 3 (×0.5), removed by the scalp.
    pub dropped: NeckOut,
}

impl SimpleFpn {
    /// `w` is the neck's path (`image_encoder.neck`, from `sam2_convs`); `dim` the trunk width.
    pub fn new(w: &Weights, dim: i64) -> Result<Self, WeightsError> {
        let l0 = w.pp(0);
        let l1 = w.pp(1);
        Ok(SimpleFpn {
            up4: (
                ConvTranspose2d::new(&l0.pp("dconv_2x2_0"), dim, dim / 2, 2, 2)?,
                ConvTranspose2d::new(&l0.pp("dconv_2x2_1"), dim / 2, dim / 4, 2, 2)?,
            ),
            up2: ConvTranspose2d::new(&l1.pp("dconv_2x2"), dim, dim / 2, 2, 2)?,
            outs: [
                NeckOut::new(&l0, dim / 4)?,
                NeckOut::new(&l1, dim / 2)?,
                NeckOut::new(&w.pp(2), dim)?,
            ],
            dropped: NeckOut::new(&w.pp(3), dim)?,
        })
    }

    /// The trunk output `[B, C, g, g]` -> levels finest first: `[B, 256, 4g, 4g]`,
    /// `[B, 256, 2g, 2g]`, `[B, 256, g, g]`.
    pub fn forward(&self, x: &Tensor) -> Vec<Tensor> {
        let l0 = self.up4.1.forward(&gelu(&self.up4.0.forward(x)));
        let l1 = self.up2.forward(x);
        vec![
            self.outs[0].forward(&l0),
            self.outs[1].forward(&l1),
            self.outs[2].forward(x),
        ]
    }
}
