"""What training, prediction and counting share: normalisation, device and precision, metrics."""
