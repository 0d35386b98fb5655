//! Trained models shared by the daemon and the CLIs: the Bayes token store and the ONNX
//! model land here.

pub mod bayes;
pub mod bayes_live;
pub mod bayes_redis;
pub mod bayes_store;
pub mod learn_queue;
pub mod onnx;
