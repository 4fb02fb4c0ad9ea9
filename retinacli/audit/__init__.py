"""Label audit: find the likely mistakes in a dataset's boxes by comparing them with a model's
detections (`scoring`), the folds that let every image be judged by a model that never saw it
(`folds`), the files an audit writes (`outputs`), known errors put into a dataset to measure an
audit (`inject`), and cleanlab's object-detection scores beside ours (`cleanlab_scores`)."""
