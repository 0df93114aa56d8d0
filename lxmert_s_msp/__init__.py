"""Multi-stage pre-training of LXMERT-S: data, training, evaluation, evidence and Hub publishing.

The model and its processor live in `modeling_lxmert_s`, the region detector in `faster_rcnn_vg`; this package
holds everything around them (README, "Where things live").
"""
