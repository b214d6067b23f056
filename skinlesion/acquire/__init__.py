"""Getting the data: the download routes (HTTP, Harvard Dataverse, Kaggle), safe archive
extraction, the on-disk layouts -> manifest adapters, the bad-image check and the synthetic demo
dataset. Only the download stage imports this subpackage."""
