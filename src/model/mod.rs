//! Trained models shared by the daemon and the CLIs: the Bayes token store and the ONNX
//! model land here (see the Bayes and ONNX issues). Nothing is loaded yet.
