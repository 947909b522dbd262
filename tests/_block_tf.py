import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow.") or name.startswith("tensorflow_"):
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, _Block())
import runpy
sys.argv = ["tlres"] + sys.argv[1:]
runpy.run_module("tlres.experiments.improved", run_name="__main__")
