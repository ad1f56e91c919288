"""Video sources read from disk: DAVIS 2016/2017 (`davis`), YouTube-VOS 2018/2019 (`youtube`),
image datasets as one-frame videos (`static`), weighted mixes of sources (`mixed`), and the
base they share (`folder_source`). The generated dataset is `vos.data.synthetic`."""
