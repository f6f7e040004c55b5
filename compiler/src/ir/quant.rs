//! Block-wise symmetric weight quantization in ONNX Runtime's `MatMulNBits` layout
//! (com.microsoft): what `mambac export --quantize int8|int4` writes for the linear layers.
//!
//! A weight `W [N, K]` (a `torch.nn.Linear` as stored: out × in) is cut along K into blocks of
//! `block` values. Each block gets one scale, `max|w| / (2^(bits-1) - 1)`, and its values become
//! `q = round(w / scale) + 2^(bits-1)` in `[0, 2^bits)`; `MatMulNBits` without a `zero_points`
//! input reads them back as `(q - 2^(bits-1)) * scale`. K is padded to whole blocks with zeros.
//! Layout: `B [N, blocks, block * bits / 8]` bytes, 4-bit values two to a byte, the lower index
//! in the low nibble; `scales [N * blocks]`, row-major.
//!
//! The reference interpreter reads the quantized weights back with [`BlockQuant::dequantize`],
//! so it evaluates exactly the model the file holds.

/// Bits and block length of a quantized weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockQuant {
    pub bits: u32,
    pub block: usize,
}

impl BlockQuant {
    /// `bits` 4 or 8; `block` a power of two, at least 16 (what `MatMulNBits` accepts).
    pub fn new(bits: u32, block: usize) -> Result<BlockQuant, String> {
        if bits != 4 && bits != 8 {
            return Err(format!("{bits}-bit weights are not supported (4 or 8)"));
        }
        if block < 16 || !block.is_power_of_two() {
            return Err(format!("block size {block} must be a power of two of at least 16"));
        }
        Ok(BlockQuant { bits, block })
    }

    pub fn blocks(&self, k: usize) -> usize {
        k.div_ceil(self.block)
    }

    /// Bytes of one block's values.
    pub fn blob_bytes(&self) -> usize {
        self.block * self.bits as usize / 8
    }

    fn zero_point(&self) -> i32 {
        1 << (self.bits - 1)
    }

    /// The largest |q - zero_point| a scale maps max|w| to.
    fn qmax(&self) -> i32 {
        (1 << (self.bits - 1)) - 1
    }

    /// Quantizes a row-major `[n, k]` weight: (packed values `[n, blocks, blob_bytes]`, scales
    /// `[n * blocks]`). `store_scale` rounds a scale to the type the file keeps it in (float16 for
    /// a float16 export): values are rounded against the scale as stored, so what the file holds
    /// is exactly what was quantized.
    pub fn quantize(&self, w: &[f32], n: usize, k: usize, store_scale: impl Fn(f32) -> f32) -> (Vec<u8>, Vec<f32>) {
        assert_eq!(w.len(), n * k, "weight is not [{n}, {k}]");
        let nb = self.blocks(k);
        let (zp, qmax) = (self.zero_point(), self.qmax());
        let mut packed = vec![0u8; n * nb * self.blob_bytes()];
        let mut scales = vec![0f32; n * nb];
        let mut q = vec![0i32; self.block];
        for row in 0..n {
            for b in 0..nb {
                let start = b * self.block;
                let vals = &w[row * k + start..row * k + (start + self.block).min(k)];
                let amax = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = store_scale(amax / qmax as f32);
                q.fill(zp);
                if scale > 0.0 {
                    for (qi, &v) in q.iter_mut().zip(vals) {
                        *qi = ((v / scale).round() as i32).clamp(-qmax, qmax) + zp;
                    }
                }
                scales[row * nb + b] = scale;
                let out = &mut packed[(row * nb + b) * self.blob_bytes()..][..self.blob_bytes()];
                match self.bits {
                    8 => out.iter_mut().zip(&q).for_each(|(o, &v)| *o = v as u8),
                    _ => {
                        for (j, o) in out.iter_mut().enumerate() {
                            *o = (q[2 * j] | (q[2 * j + 1] << 4)) as u8;
                        }
                    }
                }
            }
        }
        (packed, scales)
    }

    /// The `[n, k]` weight `MatMulNBits` computes with, from the packed values and scales.
    pub fn dequantize(&self, packed: &[u8], scales: &[f64], n: usize, k: usize) -> Vec<f64> {
        let nb = self.blocks(k);
        let zp = self.zero_point();
        let mut w = vec![0f64; n * k];
        for row in 0..n {
            for col in 0..k {
                let (b, i) = (col / self.block, col % self.block);
                let blob = &packed[(row * nb + b) * self.blob_bytes()..];
                let q = match self.bits {
                    8 => blob[i] as i32,
                    _ => ((blob[i / 2] >> (4 * (i % 2))) & 0xf) as i32,
                };
                w[row * k + col] = (q - zp) as f64 * scales[row * nb + b];
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    }

    #[test]
    fn round_trip_error_is_at_most_half_a_step() {
        for (bits, block, n, k) in [(8, 32, 5, 70), (4, 32, 7, 64), (4, 16, 3, 33), (8, 128, 2, 300)] {
            let q = BlockQuant::new(bits, block).unwrap();
            let w = lcg(bits as u64 * 31 + k as u64, n * k);
            let (packed, scales) = q.quantize(&w, n, k, |s| s);
            assert_eq!(packed.len(), n * q.blocks(k) * block * bits as usize / 8);
            assert_eq!(scales.len(), n * q.blocks(k));
            let s64: Vec<f64> = scales.iter().map(|&s| s as f64).collect();
            let back = q.dequantize(&packed, &s64, n, k);
            let mut worst = 0f64;
            for row in 0..n {
                for col in 0..k {
                    let s = s64[row * q.blocks(k) + col / block];
                    let e = (back[row * k + col] - w[row * k + col] as f64).abs();
                    assert!(e <= s * 0.5 + 1e-7, "bits {bits} [{row}, {col}]: error {e} over half a step {s}");
                    worst = worst.max(e / s);
                }
            }
            assert!(worst > 0.1, "the test data should not quantize exactly (worst {worst})");
        }
    }

    #[test]
    fn packing_matches_matmulnbits() {
        // One 4-bit block of 16 values: w = (i - 7) * 0.5 for i in 0..16, clamped by qmax 7 at
        // the top: max|w| = 4 (i = 15), scale 4/7.
        let q = BlockQuant::new(4, 16).unwrap();
        let w: Vec<f32> = (0..16).map(|i| (i as f32 - 7.0) * 0.5).collect();
        let (packed, scales) = q.quantize(&w, 1, 16, |s| s);
        assert_eq!(scales, vec![4.0 / 7.0]);
        let expect_q: Vec<u8> = w.iter().map(|&v| ((v / (4.0 / 7.0)).round() as i32 + 8) as u8).collect();
        for j in 0..8 {
            assert_eq!(packed[j] & 0xf, expect_q[2 * j], "low nibble of byte {j}");
            assert_eq!(packed[j] >> 4, expect_q[2 * j + 1], "high nibble of byte {j}");
        }
        // 8-bit: one byte a value, zero point 128.
        let q8 = BlockQuant::new(8, 16).unwrap();
        let (p8, s8) = q8.quantize(&w, 1, 16, |s| s);
        assert_eq!(p8[15], 127 + 128);
        assert_eq!(p8[7], 128);
        assert!((s8[0] - 4.0 / 127.0).abs() < 1e-9);
    }

    #[test]
    fn all_zero_block_and_padding_read_back_as_zero() {
        let q = BlockQuant::new(4, 16).unwrap();
        let mut w = vec![0f32; 2 * 20];
        w[20] = 1.0; // row 1, column 0
        let (packed, scales) = q.quantize(&w, 2, 20, |s| s);
        assert_eq!(scales[0], 0.0);
        let s64: Vec<f64> = scales.iter().map(|&s| s as f64).collect();
        let back = q.dequantize(&packed, &s64, 2, 20);
        // 7 * float32(1 / 7): exact up to the scale's float32 rounding.
        assert!((back[20] - 1.0).abs() < 1e-6, "{}", back[20]);
        assert!(back.iter().enumerate().all(|(i, &v)| i == 20 || v == 0.0));
    }

    #[test]
    fn rejects_what_matmulnbits_does_not_take() {
        assert_eq!(BlockQuant::new(3, 32).unwrap_err(), "3-bit weights are not supported (4 or 8)");
        assert_eq!(BlockQuant::new(4, 24).unwrap_err(), "block size 24 must be a power of two of at least 16");
        assert_eq!(BlockQuant::new(8, 8).unwrap_err(), "block size 8 must be a power of two of at least 16");
    }
}
