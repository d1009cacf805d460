"""HMER multitask data (Uni-MuMER): vanilla, Tree-CoT, Symbol Counting and Error-Driven-Learning builders."""
