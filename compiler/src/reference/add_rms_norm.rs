//! AddRmsNorm (docs/op-contract.md "AddRmsNorm") in float64, and the plain RMSNorm it ends in.

/// RMSNorm of each row of `hidden` values: `r / sqrt(mean(r^2) + eps) * weight`.
pub fn rms_norm(rows: &[f64], weight: &[f64], eps: f64) -> Vec<f64> {
    let h = weight.len();
    let mut out = Vec::with_capacity(rows.len());
    if h == 0 {
        return out;
    }
    for row in rows.chunks(h) {
        let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / h as f64 + eps).sqrt();
        out.extend(row.iter().zip(weight).map(|(v, w)| v * inv * w));
    }
    out
}

/// `(y, residual_out)`: `residual_out = residual + x` (x alone when residual is absent), `y` its
/// RMSNorm times `weight`; rows of `weight.len()` values.
pub fn add_rms_norm(x: &[f64], residual: Option<&[f64]>, weight: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>) {
    let sum: Vec<f64> = match residual {
        Some(r) => r.iter().zip(x).map(|(r, x)| r + x).collect(),
        None => x.to_vec(),
    };
    (rms_norm(&sum, weight, eps), sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_of_equal_values_normalises_to_the_weight() {
        let (y, s) = add_rms_norm(&[1.0, 1.0, 2.0, 2.0], Some(&[1.0, 1.0, 0.0, 0.0]), &[0.5, 2.0], 0.0);
        assert_eq!(s, [2.0, 2.0, 2.0, 2.0]);
        assert_eq!(y, [0.5, 2.0, 0.5, 2.0]);
    }

    #[test]
    fn without_residual_the_sum_is_x() {
        let (y, s) = add_rms_norm(&[3.0, 4.0], None, &[1.0, 1.0], 0.0);
        assert_eq!(s, [3.0, 4.0]);
        let rms = (12.5f64).sqrt();
        assert_eq!(y, [3.0 / rms, 4.0 / rms]);
    }
}
