import numpy as np, SimpleITK as sitk
def test_inproc(tiny_package, kmeans_t1):
    from medssl.inference.predictor import Predictor
    image = sitk.ReadImage(str(kmeans_t1))
    small = image[: image.GetWidth() // 3, : image.GetHeight() // 3, :20]
    alone = Predictor.from_package(tiny_package, "cpu", "openvino", "auto")
    first = alone.predict([small], probabilities=True)
    folder = Predictor.from_package(tiny_package, "cpu", "openvino", "auto")
    folder.predict([image])
    after = folder.predict([small], probabilities=True)
    assert np.array_equal(sitk.GetArrayFromImage(first.probabilities), sitk.GetArrayFromImage(after.probabilities))
