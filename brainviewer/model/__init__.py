"""The segmentation model: network and segmenter, weights I/O, preprocessing, post-processing,
ONNX, the Hub, model cards."""
