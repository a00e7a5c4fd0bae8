//! upweight: exact influence functions for weighted models (DESIGN.md defines every quantity,
//! sign and formula).
//!
//! The core is plain Rust on ndarray (no Python types outside `python`, behind the `python`
//! feature). A model family is one type implementing [`Model`]; nothing else knows which family
//! it is.
//! - [`data`]: rows of a training set: [`Table`] (float64/float32/CSR/`.npy`), the [`Rows`]
//!   source trait, the in-memory [`Batch`] the kernels read;
//! - [`models`]: the [`Model`] trait; [`Glm`] (GLM families) and [`GradientModel`] (user
//!   gradients, empirical Fisher);
//! - [`objective`]: the weighted, penalised objective, its gradient, Hessian and HVPs;
//! - [`solvers`]: H v = g, direct or CG, one [`Prepared`] solver for Newton and influence;
//! - [`fit`]: weighted Newton and exact refits;
//! - [`influence`]: I(z), scores, top-k, self-influence, leverage, for an [`Influence`] that owns
//!   its model, theta and training data;
//! - [`blocks`]: deterministic parallel loops over row blocks; [`linalg`]: faer glue;
//!   [`cancel`]: Ctrl-C and progress; [`memory`]: size checks before large allocations;
//!   [`allocator`]: the extension's global allocator (largest blocks from the system).

pub mod allocator;
pub mod blocks;
pub mod cancel;
pub mod data;
pub mod error;
pub mod fit;
pub mod influence;
pub mod linalg;
pub mod memory;
pub mod models;
pub mod objective;
pub mod rng;
pub mod solvers;

#[cfg(feature = "python")]
mod python;

pub use cancel::Cancel;
pub use data::{Batch, Features, Names, Rows, Table};
pub use error::{Error, Result};
pub use fit::{newton, FitOptions, FitResult};
pub use influence::{Influence, LeaveOutTarget, Points, Scores, TopK};
pub use models::glm::{Family, Glm};
pub use models::gradients::GradientModel;
pub use models::mlp::{Activation, Mlp};
pub use models::{Model, Prediction, QueryNorm};
pub use objective::Objective;
pub use solvers::{Method, Prepared, SolverOptions};
