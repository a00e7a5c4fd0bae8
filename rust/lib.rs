//! upweight: exact influence functions for weighted generalised linear models.
//!
//! The core is plain Rust on ndarray views (no Python types outside `bindings`):
//! - [`data`]: weighted in-memory blocks; [`matrix`]: a block's X, dense or sparse (CSR); [`source`]: row sources (float32, `.npy` files); [`families`]: GLM losses in the linear predictor;
//! - [`model`]: the model-level trait; [`glm`]: its GLM implementation; [`gradients`]: user-supplied
//!   per-example gradients (deep models) with the empirical Fisher;
//! - [`objective`]: the weighted, penalised objective, its gradient, Hessian and HVPs;
//! - [`solvers`]: H v = g; [`fit`]: weighted Newton; [`influence`]: I(z), scores, self-influence;
//! - [`refit`]: exact refits with changed weights, in parallel (the ground truth for influence);
//!   [`diagnostics`]: leverage (hat values) of weighted GLMs;
//! - [`blocks`]: deterministic parallel loops over row blocks; [`linalg`]: faer glue.
//!
//! DESIGN.md in the repository defines every quantity, sign and formula.

pub mod blocks;
pub mod cancel;
pub mod data;
pub mod diagnostics;
pub mod error;
pub mod families;
pub mod fit;
pub mod glm;
pub mod gradients;
pub mod influence;
pub mod linalg;
pub mod matrix;
pub mod model;
pub mod objective;
pub mod refit;
pub mod solvers;
pub mod source;

#[cfg(feature = "python")]
mod bindings;

pub use cancel::Cancel;
pub use data::Dataset;
pub use error::{Error, Result};
pub use families::Family;
pub use fit::{newton, FitOptions, FitResult};
pub use glm::{Glm, Prediction};
pub use gradients::GradientModel;
pub use influence::Influence;
pub use model::Model;
pub use objective::Objective;
pub use source::{Features, NpyFile, Rows, Table};
