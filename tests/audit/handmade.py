"""A hand-made dataset of three images and detections with one issue of each kind but poor_box
(see the comment), for the audit's tests."""

# image 1: a circle (ann 1, well detected), a square labelled as triangle (ann 2), a duplicate
#          of the circle (ann 3); image 2: a square (ann 4), an unlabelled circle (detected),
#          a triangle label on background (ann 5); image 3: nothing.
COCO = {
    "images": [
        {"id": 1, "file_name": "sub/one.png", "width": 200, "height": 160},
        {"id": 2, "file_name": "two.png", "width": 200, "height": 160},
        {"id": 3, "file_name": "three.png", "width": 200, "height": 160},
    ],
    "categories": [{"id": 7, "name": "circle"}, {"id": 8, "name": "square"}, {"id": 9, "name": "triangle"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [100, 20, 50, 50], "area": 2500, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [11, 10, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 8, "bbox": [20, 20, 60, 60], "area": 3600, "iscrowd": 0},
        {"id": 5, "image_id": 2, "category_id": 9, "bbox": [150, 110, 30, 30], "area": 900, "iscrowd": 0},
    ],
}
RESULTS = [
    {"image_id": 1, "category_id": 7, "bbox": [10, 11, 40, 40], "score": 0.9},
    {"image_id": 1, "category_id": 8, "bbox": [101, 20, 50, 50], "score": 0.8},
    {"image_id": 2, "category_id": 8, "bbox": [20, 21, 60, 60], "score": 0.95},
    {"image_id": 2, "category_id": 7, "bbox": [100, 30, 40, 40], "score": 0.85},
    {"image_id": 2, "category_id": 99, "bbox": [150, 110, 30, 30], "score": 0.99},  # not a category
]
