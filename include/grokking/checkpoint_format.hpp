// The checks a checkpoint file passes before LibTorch's zip reader and unpickler see it: they
// trust what the file says (found by fuzz_checkpoint), so a damaged or hostile file is refused
// here. Torch-free.
#pragma once
#include <string>

namespace grokking {

// The file ends with a zip end-of-central-directory record (possibly after a zip64 one) whose
// central directory lies inside the file.
bool zip_is_complete(const std::string& bytes);
// The archive is a plain zip with one */data.pkl whose pickle walks clean against the sizes of
// its */data/<key> records (only the opcodes torch::pickle_save writes, lengths within the file,
// memo indices in order, storages no larger than their records).
bool archive_fits(const std::string& bytes);

}  // namespace grokking
