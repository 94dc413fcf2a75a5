//! AdamW with decoupled weight decay (as `torch.optim.AdamW`), a linear warm-up /
//! linear decay schedule, and global-norm gradient clipping.
//!
//! Written here rather than using `candle_nn::AdamW` because its moment estimates are
//! private (a checkpoint must hold them to resume exactly) and it allocates a tensor
//! per operation per parameter; this one updates flat buffers in parallel.

use candle_core::{backprop::GradStore, Result, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.01,
        }
    }
}

/// Optimizer state: first and second moments per parameter name, and the step count.
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    pub m: HashMap<String, Vec<f32>>,
    pub v: HashMap<String, Vec<f32>>,
}

/// Learning rate at `step` (0-based): linear warm-up to `peak` over `warmup` steps,
/// then linear decay to 0 at `total`.
pub fn linear_schedule(step: u64, warmup: u64, total: u64, peak: f32) -> f32 {
    if step < warmup {
        peak * (step + 1) as f32 / warmup as f32
    } else if total > warmup {
        peak * (total.saturating_sub(step)) as f32 / (total - warmup) as f32
    } else {
        peak
    }
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            step: 0,
            m: HashMap::new(),
            v: HashMap::new(),
        }
    }

    /// [`AdamW::step_flat`] with gradients from a backward pass.
    pub fn step(
        &mut self,
        vars: &[(String, Var)],
        grads: &GradStore,
        lr: f32,
        clip: Option<f32>,
    ) -> Result<f32> {
        let mut gs: Vec<Option<Vec<f32>>> = Vec::with_capacity(vars.len());
        for (_, var) in vars {
            gs.push(match grads.get(var) {
                Some(g) => Some(flat(g)?),
                None => None,
            });
        }
        self.step_flat(vars, gs, lr, clip)
    }

    /// Clips gradients (flat, aligned with `vars`) to global L2 norm `clip` (if given)
    /// and applies one update at learning rate `lr`. Returns the gradient norm before
    /// clipping. Parameters without a gradient are left alone.
    /// The global L2 norm of flat gradients (what clipping scales by).
    pub fn grad_norm(gs: &[Option<Vec<f32>>]) -> f32 {
        gs.iter()
            .flatten()
            .map(|g| g.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>())
            .sum::<f64>()
            .sqrt() as f32
    }

    pub fn step_flat(
        &mut self,
        vars: &[(String, Var)],
        gs: Vec<Option<Vec<f32>>>,
        lr: f32,
        clip: Option<f32>,
    ) -> Result<f32> {
        let norm = Self::grad_norm(&gs);
        if !norm.is_finite() {
            // Nothing is applied: the weights stay those of the last good step.
            return Err(candle_core::Error::Msg(format!(
                "gradient norm is {norm}; weights left unchanged"
            )));
        }
        let scale = match clip {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for ((name, var), g) in vars.iter().zip(gs) {
            let Some(g) = g else { continue };
            let mut p = flat(var.as_tensor())?;
            let m = self
                .m
                .entry(name.clone())
                .or_insert_with(|| vec![0.0; p.len()]);
            let v = self
                .v
                .entry(name.clone())
                .or_insert_with(|| vec![0.0; p.len()]);
            p.par_chunks_mut(4096)
                .zip(m.par_chunks_mut(4096))
                .zip(v.par_chunks_mut(4096).zip(g.par_chunks(4096)))
                .for_each(|((p, m), (v, g))| {
                    for i in 0..p.len() {
                        let gi = g[i] * scale;
                        p[i] -= lr * c.weight_decay * p[i];
                        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
                        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
                        let mhat = m[i] / bc1;
                        let vhat = v[i] / bc2;
                        p[i] -= lr * mhat / (vhat.sqrt() + c.eps);
                    }
                });
            var.set(&Tensor::from_vec(p, var.shape(), var.device())?)?;
        }
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One step by hand: p = 1, g = 0.5, lr = 0.1, wd = 0.01, eps = 1e-6.
    /// Decay: p = 1 - 0.1 * 0.01 * 1 = 0.999. m = 0.05, v = 0.00025;
    /// mhat = 0.05 / 0.1 = 0.5, vhat = 0.00025 / 0.001 = 0.25;
    /// p = 0.999 - 0.1 * 0.5 / (0.5 + 1e-6) = 0.899000.
    #[test]
    fn adamw_step_by_hand() {
        let var = Var::from_tensor(&Tensor::new(&[1.0f32], &Device::Cpu).unwrap()).unwrap();
        let loss = (var.as_tensor() * 0.5).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(AdamWConfig::default());
        let norm = opt
            .step(&[("p".into(), var.clone())], &grads, 0.1, None)
            .unwrap();
        assert!((norm - 0.5).abs() < 1e-7);
        let p = var.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((p - 0.899).abs() < 1e-6, "{p}");
    }

    /// Clipping to 0.25 halves the gradient; Adam's first step is scale-invariant up
    /// to eps, so the update stays ~lr: with g = 0.25, mhat / sqrt(vhat) = 1.
    #[test]
    fn clipping_reports_the_unclipped_norm() {
        let var = Var::from_tensor(&Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap()).unwrap();
        let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap(); // g = 2p = [6, 8], |g| = 10
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        });
        let norm = opt
            .step(&[("p".into(), var.clone())], &grads, 0.1, Some(1.0))
            .unwrap();
        assert!((norm - 10.0).abs() < 1e-5);
        let p = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (p[0] - 2.9).abs() < 1e-5 && (p[1] - 3.9).abs() < 1e-5,
            "{p:?}"
        );
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        assert_eq!(linear_schedule(0, 10, 110, 1.0), 0.1);
        assert_eq!(linear_schedule(9, 10, 110, 1.0), 1.0);
        assert_eq!(linear_schedule(10, 10, 110, 1.0), 1.0);
        assert_eq!(linear_schedule(60, 10, 110, 1.0), 0.5);
        assert_eq!(linear_schedule(110, 10, 110, 1.0), 0.0);
    }
}
