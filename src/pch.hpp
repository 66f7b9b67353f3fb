// Precompiled header for the library: <torch/torch.h> costs ~20 s per translation unit.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
