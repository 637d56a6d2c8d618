int mid_call(int (*callback)(int), int value);
