# nn module: layers and score-network models (forward, backward, JVP, reverse-over-forward).
sgm_unit_test(test_nn_layers SOURCES test_nn_layers.c TIMEOUT 60)
sgm_unit_test(test_nn_models SOURCES test_nn_models.c TIMEOUT 120)
